"""Host-side test harness for the lightctl light-controller firmware."""
