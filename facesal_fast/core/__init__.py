"""The pure-Python floor beside the ops: argument checks shared across the package
(:mod:`~.validate`), occlusion windows on a grid (:mod:`~.grid`) and the checked option
records (:mod:`~.options`). numpy only: importing it never loads torch."""
