"""modbind-imu: a six-channel IMU encoder plugin for modbind (example third-party package)."""
