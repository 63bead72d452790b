import itsdangerous

print("signed:", itsdangerous.Signer("k").sign("corpus").decode())
