"""hesslib: Hessian spectra, loss landscapes and attacks for PyTorch models.

The library behind the executable book that reproduces Yao et al.,
"Hessian-based Analysis of Large Batch Training and Robustness to
Adversaries" (NeurIPS 2018).
"""

__version__ = "0.1.0"
