import geo

print("Paris-Berlin km:", round(geo.km(48.8566, 2.3522, 52.52, 13.405)))
