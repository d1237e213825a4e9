"""The end-to-end benchmark suite behind ``facesal bench`` (captum, the published CSM loop,
the quality presets, audit throughput); the kernels' benchmarks live in ``benchmarks/``.

* :mod:`~facesal_fast.benchmark.cases`: models on photos, the published CSM loop, the table.
* :mod:`~facesal_fast.benchmark.cis_end_to_end`: image-space occlusion and CIS against captum
  and the CSM loop (``facesal bench``).
* :mod:`~facesal_fast.benchmark.presets`: the default path and the quality presets
  (``facesal bench --presets``).
* :mod:`~facesal_fast.benchmark.shared_batches`: photos one at a time against together
  (``facesal bench --shared``).
* :mod:`~facesal_fast.benchmark.audit_throughput`: ``Audit`` over bundled photos in a fresh process.
"""
