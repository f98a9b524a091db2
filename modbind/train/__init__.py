"""Emergent alignment training: InfoNCE against frozen caption embeddings on a DeepSpeed engine.

``trainer.run_alignment`` is the entry point (``modbind align`` reaches it through
:mod:`modbind.workflow`); it builds and exports a :class:`modbind.model.AlignedModel`. Only ``engine``
imports DeepSpeed; nothing here imports :mod:`modbind.eval`.
"""
