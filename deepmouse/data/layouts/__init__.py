"""Recording formats on disk: one module per format, holding every path the format uses.

A layout module is where a recording format's group and dataset paths, attribute names,
units and dtypes live, together with the few functions that write them into a file and
check that a file holds them. Writers (the ``simulated`` source) and readers (the NWB
sources) import the paths from here and spell none of their own, so what is written is
what is read.

:mod:`~deepmouse.data.layouts.ophys` is the Allen Brain Observatory two-photon (NWB 1.x)
layout. A new format is a new module next to it; it does not edit the existing ones.
"""
