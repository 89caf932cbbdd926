"""The model side of pumpwatch, owned by data science.

- :mod:`models.training`: simulated training sets, features, classifier and
  baseline fitting, evaluation (may use :mod:`simulator` and scikit-learn).
- :mod:`models.serving`: the SageMaker inference container (server, handler,
  bundle loading, physics evidence); imports :mod:`dsp` and nothing else of ours.
- :mod:`models.registry`: the local and SageMaker model registries.

The pipeline (:mod:`cloud`, :mod:`edge`) never imports this package: it meets
the models at the endpoint contract, the report schema and the bundle manifest.
"""
