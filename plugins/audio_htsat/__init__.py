"""modbind_audio_htsat: the HTS-AT audio encoder (official AudioSet weights or LAION-CLAP towers) for modbind.

Registered through the ``modbind.plugins`` entry point as ``audio_htsat`` (see :mod:`.plugin`); the Swin
body is transformers' ``ClapAudioModel``, the checkpoint converters live in :mod:`.convert`.
"""
