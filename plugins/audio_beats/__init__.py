"""modbind_audio_beats: the BEATs audio encoder plugin (``audio_beats``).

``config`` (official cfg fields, base/tiny presets), ``model`` (the encoder, state_dict-compatible with
Microsoft's BEATs), ``checkpoint`` (official .pt / .safetensors loader), ``plugin`` (options and hooks).
"""
