"""Emergent alignment training: InfoNCE against frozen caption embeddings, DeepSpeed engine, export.

``trainer.run_alignment`` is the entry point (``modbind align``); ``export`` holds the exported
:class:`~modbind.train.export.AlignedModel` that ``modbind.load`` returns. Only ``engine`` imports DeepSpeed.
"""
