"""Trainers: PGMM (single process and data-parallel), the pose estimator P_e, the recognizer."""
