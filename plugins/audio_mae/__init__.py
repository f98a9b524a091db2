"""modbind_audio_mae"""
