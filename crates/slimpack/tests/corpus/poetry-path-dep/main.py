from importlib.metadata import version

import money

print("total cents:", money.cents("12.5") + money.cents("0.75"), "money", version("money"))
