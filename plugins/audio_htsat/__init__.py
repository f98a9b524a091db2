"""modbind_audio_htsat"""
