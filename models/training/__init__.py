"""Training: simulated data sets, classifier and baseline fitting, evaluation.

Imports :mod:`dsp`, :mod:`simulator` and :mod:`models.serving` (whose artifact
formats it writes); never imported by serving code.
"""
