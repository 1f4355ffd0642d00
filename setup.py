# Metadata lives in setup.cfg; this file lets older tools run `setup.py`.
from setuptools import setup

setup()
