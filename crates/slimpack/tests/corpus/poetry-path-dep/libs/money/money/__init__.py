def cents(amount: str) -> int:
    units, _, frac = amount.partition(".")
    return int(units) * 100 + int((frac + "00")[:2])
