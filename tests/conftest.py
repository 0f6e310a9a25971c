"""Settings for the whole suite."""
from hypothesis import settings

# Property tests run on a shared, noisy machine: a slow example is not a failure (speed is
# measured by `netstack bench`, never asserted in a test).
settings.register_profile("netstack", deadline=None)
settings.load_profile("netstack")
