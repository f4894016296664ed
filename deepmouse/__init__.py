"""deepmouse: benchmark deep vision models against mouse visual cortex."""
