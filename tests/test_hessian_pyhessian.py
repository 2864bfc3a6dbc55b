"""Cross-check of top eigenvalues and trace against PyPI ``pyhessian`` 0.1."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hesslib.hessian import WeightHessian, lanczos

pyhessian = pytest.importorskip("pyhessian")


DT = torch.float64
# pyhessian stops power iteration on a relative change of the estimate below its
# tol, which bounds the eigenvalue error only loosely: compare at 1e-4
CROSS_RTOL = 1e-4


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).to(DT)
    x = torch.randn(32, 5, dtype=DT)
    y = torch.randint(0, 3, (32,))
    return model, x, y


# pyhessian calls backward(create_graph=True), which torch warns about
@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph")
def test_top_eigenvalues_agree_with_pyhessian():
    model, x, y = problem()
    ours = lanczos(WeightHessian(model, F.cross_entropy, (x, y)), k=2, tol=1e-10)
    dense = WeightHessian(model, F.cross_entropy, (x, y)).to_dense()
    ref = torch.linalg.eigvalsh(dense)
    assert ref[-2] > ref[0].abs()  # power iteration by magnitude finds the same two
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DT)  # pyhessian draws its vectors in the default dtype
    torch.manual_seed(0)
    try:
        hess = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        theirs, _ = hess.eigenvalues(maxIter=2000, tol=1e-9, top_n=2)
    finally:
        torch.set_default_dtype(previous)
        model.zero_grad(set_to_none=True)
    theirs = torch.tensor(theirs, dtype=DT)
    torch.testing.assert_close(ours.eigenvalues, theirs, rtol=CROSS_RTOL, atol=0)
    torch.testing.assert_close(ours.eigenvalues, ref.flip(0)[:2], rtol=1e-8, atol=0)
