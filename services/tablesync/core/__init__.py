"""Pure core: no I/O, standard library only."""
