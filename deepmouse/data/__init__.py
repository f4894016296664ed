"""Neural data: Brain Observatory NWB files, the simulated source, trial responses, neuron selection."""
