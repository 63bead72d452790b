"""A job whose wheel links libstdc++, which the runtime gets from Debian."""
import greenlet

print("greenlet", greenlet.__version__, greenlet.greenlet(lambda: 6 * 7).switch())
