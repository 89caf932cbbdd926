"""Classifier kinds, one module each, found by listing this package.

A module here is a kind: it defines ``KIND`` (the name a bundle's
``classifier.kind`` uses) and ``load(bundle_dir, spec) -> Classifier``, and
its classifier objects implement :class:`models.serving.classifier.Classifier`
(``save(bundle_dir)`` returns the ``classifier`` entry of ``bundle.json``).
Modules whose name starts with ``_`` are skipped. Serving code only: numpy,
scipy and :mod:`dsp`, never training code (fitting lives in
:mod:`models.training`).

- ``physics``: the rules of :mod:`models.serving.physics` (no file).
- ``softmax``: multinomial logistic regression (:mod:`.softmax`).
- ``mlp``: one tanh hidden layer (:mod:`models.serving.mlp`).
- ``centroid``: Gaussian nearest-centroid, with a ``centroid_distance`` result
  field (:mod:`.centroid`).
"""
