"""PGMM networks: one file per box of the paper's Fig. 3, plus the TPSMM motion branch."""
