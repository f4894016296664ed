"""Recording formats on disk: one module per format, holding every path the format uses.

A layout module is where a recording format's group and dataset paths, attribute names,
units and dtypes live, together with the functions that write them into a file and read
or check them. Writers (the simulated sources) and readers import the paths from here and
spell none of their own, so what is written is what is read.

:mod:`~deepmouse.data.layouts.ophys` is the Allen Brain Observatory two-photon (NWB 1.x)
layout; :mod:`~deepmouse.data.layouts.ecephys` the Visual Coding Neuropixels session (NWB 2)
layout. A new format is a new module next to them; it does not edit the existing ones.
"""
