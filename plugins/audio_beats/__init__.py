"""modbind_audio_beats"""
