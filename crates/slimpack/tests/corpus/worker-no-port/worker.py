import time

print("worker polling a queue", flush=True)
while True:
    time.sleep(1)
