"""modbind_audio_mae: the ``audio_mae`` encoder plugin (AudioMAE ViT-B/16 on a 1024 x 128 Kaldi fbank)."""
