"""The simulated robot (MetaWorld in MuJoCo) and its scripted operator."""
