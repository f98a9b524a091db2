"""The audio front-end shared by every audio plugin.

``io`` (decode, mix down, resample, repair), ``crop`` (random truncation / eval window + padding mask),
``fbank`` (batched Kaldi log-mel in torch, BEATs and AudioMAE presets), ``specaugment`` and ``base``
(:class:`~modbind.audio.base.AudioEncoderPlugin`, the base class of audio encoder plugins).
"""
