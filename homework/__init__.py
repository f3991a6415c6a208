"""Thin entry points, one per homework: `python homework/hwN.py fit|validate|test|predict`."""
