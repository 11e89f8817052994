import pytest
import torch
import torch.nn.functional as F
from mclner_helpers import FUSED_IMPLS, compare_to_reference, impl_device, impl_dtypes

from mclner.ops import info_nce, sup_con, sup_con_reference

# M not a multiple of any block size; P not a power of two. (M, M2): M2 = 0 is the one-set form.
SHAPES = [(1, 0, 8), (7, 0, 5), (37, 0, 24), (300, 0, 33), (1, 1, 8), (7, 3, 5), (37, 290, 24), (130, 257, 128)]


def _shape_id(s):
    return "M{}M2{}P{}".format(*s)


def make_inputs(M, M2, P, device="cpu", dtype=torch.float64, classes=4, seed=0):
    """Features correlated within a class (as learned features are) and labels with some -1 (ignored)."""
    g = torch.Generator().manual_seed(M * 131 + M2 * 7 + P + seed)
    centres = torch.randn(classes, P, generator=g, dtype=torch.float64)

    def one(n):
        lab = torch.randint(-1, classes, (n,), generator=g)
        z = torch.randn(n, P, generator=g, dtype=torch.float64) + 1.5 * centres[lab.clamp(min=0)]
        return z.to(device, dtype), lab.to(device)

    z, labels = one(M)
    x = {"z": z, "labels": labels}
    if M2:
        x["z2"], x["labels2"] = one(M2)
    return x


def split(x):
    """(float inputs, fixed keyword inputs) for compare_to_reference, which differentiates the former."""
    feats = {k: v for k, v in x.items() if k in ("z", "z2")}
    fixed = {k: v for k, v in x.items() if k not in feats}
    return feats, fixed


def naive(z, labels, z2=None, labels2=None, tau=0.1):
    """Per-anchor loops over the definition (−1/|P(i)| Σ_p log softmax), None where skipped."""
    a = F.normalize(z, dim=-1)
    b = a if z2 is None else F.normalize(z2, dim=-1)
    lb = labels if z2 is None else labels2
    out = []
    for i in range(a.shape[0]):
        cand = [k for k in range(b.shape[0]) if z2 is not None or k != i]
        pos = [k for k in cand if labels[i] >= 0 and lb[k] == labels[i]]
        if not pos:
            out.append(None)
            continue
        logits = torch.stack([a[i] @ b[k] / tau for k in cand])
        lse = torch.logsumexp(logits, 0)
        out.append(-sum(float(a[i] @ b[p] / tau - lse) for p in pos) / len(pos))
    return out


@pytest.mark.parametrize("two_sets", [False, True])
def test_reference_matches_naive(two_sets):
    x = make_inputs(9, 6 if two_sets else 0, 4)
    for tau in (0.1, 0.5):
        want = naive(**x, tau=tau)
        got = sup_con_reference(**x, temperature=tau, reduction="none")
        assert any(w is None for w in want) and any(w is not None for w in want)  # both kinds of anchors
        torch.testing.assert_close(got, torch.tensor([0.0 if w is None else w for w in want], dtype=torch.float64))
        kept = [w for w in want if w is not None]
        mean = sup_con_reference(**x, temperature=tau, reduction="mean")
        torch.testing.assert_close(mean, torch.tensor(sum(kept) / len(kept), dtype=torch.float64))


def test_info_nce_is_sup_con_with_pair_labels():
    """info_nce(za, zb) (τ = 0.1, not symmetric, mean by default) is the two-set form with labels arange."""
    x = make_inputs(23, 23, 16)
    za, zb = x["z"], x["z2"]
    ar = torch.arange(23)
    impls = ["reference"] + [i for i in ("cpu",) if _runnable(i)]
    for impl in impls:
        za_, zb_ = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
        want = info_nce(za_, zb_, impl=impl)
        want.backward()
        za2, zb2 = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
        got = sup_con(za2, ar, z2=zb2, labels2=ar, impl=impl)
        got.backward()
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(za2.grad, za_.grad)
        torch.testing.assert_close(zb2.grad, zb_.grad)


def _runnable(impl):
    from mclner.ops import available_impls

    return available_impls()[impl]["runnable"]


@pytest.mark.parametrize("impl", FUSED_IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_matches_reference(impl, shape, reduction):
    device = impl_device(impl)
    feats, fixed = split(make_inputs(*shape, device=device))
    for dtype in impl_dtypes(impl, device):
        kw = dict(fixed, temperature=0.07 if shape[0] % 2 else 0.5, reduction=reduction)
        compare_to_reference(
            lambda **k: sup_con(**k, **kw, impl=impl),
            lambda **k: sup_con_reference(**k, **kw),
            feats,
            dtype,
            atol=1e-9 if dtype == torch.float64 else 2e-4,
            rtol=0.0 if dtype == torch.float64 else 1e-5,
        )


def _edge_labels(case, M, M2):
    """Label patterns: every anchor positive with everything, none with a positive, ties across sets."""
    if case == "all_positive":
        return torch.zeros(M, dtype=torch.long), torch.zeros(M2, dtype=torch.long)
    if case == "no_positive":  # distinct labels (one set), disjoint label ranges (two sets)
        return torch.arange(M), torch.arange(M, M + M2)
    if case == "all_ignored":
        return torch.full((M,), -1), torch.full((M2,), -1)
    if case == "ties_across":  # labels repeat within and across the sets, with gaps and big values
        return torch.arange(M) % 3 * 1000 + 7, torch.arange(M2) % 5 * 1000 + 7
    raise AssertionError(case)


@pytest.mark.parametrize("impl", ("reference",) + FUSED_IMPLS)
@pytest.mark.parametrize("case", ["all_positive", "no_positive", "all_ignored", "ties_across"])
@pytest.mark.parametrize("two_sets", [False, True])
def test_label_patterns(impl, case, two_sets):
    device = torch.device("cpu") if impl == "reference" else impl_device(impl)
    M, M2, P = 21, 13, 6
    dtype = torch.float64 if impl == "reference" else torch.float32  # every fused impl takes float32
    x = make_inputs(M, M2 if two_sets else 0, P, device=device, dtype=dtype)
    la, lb = _edge_labels(case, M, M2)
    x["labels"] = la.to(device)
    if two_sets:
        x["labels2"] = lb.to(device)
    feats, fixed = split(x)
    expect_zero = case in ("all_ignored",) or (case == "no_positive")
    for reduction in ("mean", "none"):
        kw = dict(fixed, temperature=0.3, reduction=reduction)
        leaves = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
        out = sup_con(**leaves, **kw, impl=impl)
        out.sum().backward()
        if expect_zero:
            assert (out == 0).all()
            assert all((v.grad == 0).all() for v in leaves.values())
        else:
            assert (out > 0).all() if reduction == "none" else out > 0
        if impl != "reference":
            compare_to_reference(
                lambda **k: sup_con(**k, **kw, impl=impl),
                lambda **k: sup_con_reference(**k, **kw),
                feats,
                torch.float32,
                atol=2e-4,
                rtol=1e-5,
            )


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("two_sets", [False, True])
def test_gradcheck_float64(impl, two_sets):
    if impl != "reference":
        impl_device(impl)
    x = make_inputs(9, 7 if two_sets else 0, 5)
    fixed = {k: v for k, v in x.items() if k.startswith("labels")}
    if two_sets:
        fn = lambda z, z2: sup_con(z, fixed["labels"], z2=z2, labels2=fixed["labels2"], temperature=0.3,  # noqa: E731
                                   reduction="none", impl=impl)
        args = (x["z"].requires_grad_(True), x["z2"].requires_grad_(True))
    else:
        fn = lambda z: sup_con(z, fixed["labels"], temperature=0.3, reduction="none", impl=impl)  # noqa: E731
        args = (x["z"].requires_grad_(True),)
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


def _row_strided(t):
    """A view of t with a row stride larger than its width (differentiable)."""
    n = t.shape[0]
    wide = torch.cat([t.new_zeros(n, 5), t, t.new_zeros(n, 3)], dim=1)
    return wide[:, 5 : 5 + t.shape[1]]


def _col_strided(t):
    return t.t().contiguous().t()


@pytest.mark.parametrize("impl", FUSED_IMPLS)
def test_strided_inputs(impl):
    """Row-strided and column-strided features and strided labels give the reference's results."""
    device = impl_device(impl)
    x = make_inputs(40, 33, 10, device=device, dtype=torch.float32)
    labels = x["labels"].repeat_interleave(2)[::2]
    labels2 = x["labels2"].repeat_interleave(3)[::3]
    assert not labels.is_contiguous() and _row_strided(x["z"]).stride(0) == 18
    assert _col_strided(x["z2"]).stride(1) != 1
    kw = dict(temperature=0.2, reduction="sum")
    for two in (False, True):
        fixed = dict(labels=labels, **(dict(labels2=labels2) if two else {}))

        def fused(z, z2=None):
            extra = dict(z2=_col_strided(z2)) if two else {}
            return sup_con(_row_strided(z), **fixed, **extra, **kw, impl=impl)

        def ref(z, z2=None):
            return sup_con_reference(z, **fixed, **(dict(z2=z2) if two else {}), **kw)

        inputs = {"z": x["z"], **({"z2": x["z2"]} if two else {})}
        compare_to_reference(fused, ref, inputs, torch.float32, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("impl", FUSED_IMPLS)
def test_zero_rows_and_large_logits(impl):
    """A zero row (normalize eps) and a tiny temperature (logits ~ 1e3) stay finite and correct."""
    device = impl_device(impl)
    x = make_inputs(45, 0, 16, device=device, dtype=torch.float32)
    x["z"][3] = 0.0
    for tau in (1e-3, 0.1):
        got = sup_con(**x, temperature=tau, reduction="none", impl=impl)
        want = sup_con_reference(x["z"].double(), x["labels"], temperature=tau, reduction="none")
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, atol=5e-2 if tau < 0.01 else 5e-3, rtol=1e-4)


@pytest.mark.parametrize("impl", FUSED_IMPLS)
@pytest.mark.parametrize("two_sets", [False, True])
def test_double_backward_is_refused(impl, two_sets):
    """A gradient of a gradient raises a clear error (also per input with allow_unused=True); the
    first-order gradients under create_graph=True are the usual ones."""
    device = impl_device(impl)
    x = make_inputs(12, 9 if two_sets else 0, 6, device=device, dtype=torch.float32)
    feats, fixed = split(x)
    leaves = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    plain = torch.autograd.grad(sup_con(**leaves, **fixed, impl=impl), list(leaves.values()))
    for target in leaves:
        loss = sup_con(**leaves, **fixed, impl=impl)
        grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
        for g, p in zip(grads, plain):
            torch.testing.assert_close(g, p)
        second = sum((g * g).sum() for g in grads)
        with pytest.raises(RuntimeError, match="sup_con: .*double backward"):
            torch.autograd.grad(second, leaves[target], allow_unused=True)
    loss = sup_con(**leaves, **fixed, impl=impl)
    (g,) = torch.autograd.grad(loss, leaves["z"], create_graph=True)
    with pytest.raises(RuntimeError, match="sup_con: .*double backward"):
        g.sum().backward()


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(temperature=0.0), ValueError, ["temperature", "positive"]),
        (dict(temperature=-1.0), ValueError, ["temperature", "positive"]),
        (dict(temperature=float("nan")), ValueError, ["temperature", "finite"]),
        (dict(temperature=float("inf")), ValueError, ["temperature", "finite"]),
        (dict(temperature="0.1"), TypeError, ["temperature"]),
        (dict(reduction="avg"), ValueError, ["reduction"]),
        (dict(impl="fast"), ValueError, ["impl"]),
    ],
)
def test_bad_scalars(kwargs, exc, words):
    x = make_inputs(5, 0, 4)
    impls = ("reference", "auto") if "impl" not in kwargs else (kwargs.pop("impl"),)
    for impl in impls:
        with pytest.raises(exc) as info:
            sup_con(**x, **kwargs, impl=impl)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith("sup_con")
        for w in words:
            assert w in msg


def _bad_cases():
    x = make_inputs(5, 3, 4)
    z, lab, z2, lab2 = x["z"], x["labels"], x["z2"], x["labels2"]
    return [
        ("z 1-d", dict(z=z[0], labels=lab), ValueError, ["'z'", "[M, P]"]),
        ("z int", dict(z=lab[:, None].repeat(1, 4), labels=lab), TypeError, ["'z'", "floating"]),
        ("M = 0", dict(z=z[:0], labels=lab[:0]), ValueError, ["M"]),
        ("labels short", dict(z=z, labels=lab[:4]), ValueError, ["'labels'", "[M]"]),
        ("labels 2-d", dict(z=z, labels=lab[:, None]), ValueError, ["'labels'"]),
        ("labels float", dict(z=z, labels=lab.double()), TypeError, ["'labels'", "integer"]),
        ("labels bool", dict(z=z, labels=lab > 0), TypeError, ["'labels'", "integer"]),
        ("labels list", dict(z=z, labels=[0, 1, 2, 3, 4]), TypeError, ["'labels'", "Tensor"]),
        ("z2 alone", dict(z=z, labels=lab, z2=z2), ValueError, ["'z2'", "'labels2'"]),
        ("labels2 alone", dict(z=z, labels=lab, labels2=lab2), ValueError, ["'z2'", "'labels2'"]),
        ("z2 P", dict(z=z, labels=lab, z2=z2[:, :3], labels2=lab2), ValueError, ["'z2'", "[M2, P]"]),
        ("z2 dtype", dict(z=z, labels=lab, z2=z2.float(), labels2=lab2), TypeError, ["'z2'", "dtype"]),
        ("labels2 short", dict(z=z, labels=lab, z2=z2, labels2=lab2[:2]), ValueError, ["'labels2'", "[M2]"]),
        ("labels2 float", dict(z=z, labels=lab, z2=z2, labels2=lab2.float()), TypeError, ["'labels2'"]),
        ("M2 = 0", dict(z=z, labels=lab, z2=z2[:0], labels2=lab2[:0]), ValueError, ["M2"]),
    ]


@pytest.mark.parametrize("name, kwargs, exc, words", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_inputs(name, kwargs, exc, words):
    with pytest.raises(exc) as info:
        sup_con(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("sup_con")
    for w in words:
        assert w in msg, msg


@pytest.mark.gpu
def test_device_mismatch():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = make_inputs(5, 3, 4)
    with pytest.raises(ValueError, match="device"):
        sup_con(x["z"].cuda(), x["labels"])
    with pytest.raises(ValueError, match="device"):
        sup_con(x["z"], x["labels"], z2=x["z2"].cuda(), labels2=x["labels2"])


def test_meta_device_mismatch():
    """Tensors on another device are refused by name (meta stands in for a second device)."""
    x = make_inputs(5, 0, 4)
    with pytest.raises(ValueError, match="'labels'.*device"):
        sup_con(x["z"], torch.empty(5, dtype=torch.long, device="meta"))
    z2 = torch.empty(3, 4, dtype=x["z"].dtype, device="meta")
    with pytest.raises(ValueError, match="'z2'.*meta"):
        sup_con(x["z"], x["labels"], z2=z2, labels2=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="'labels2'.*device"):
        sup_con(x["z"], x["labels"], z2=x["z"][:3], labels2=torch.zeros(3, dtype=torch.long, device="meta"))


def test_label_dtypes_and_values_do_not_matter():
    """int32 or int64 labels, shifted or spread out: only which labels are equal (and < 0) counts."""
    x = make_inputs(30, 17, 8)
    base = sup_con_reference(**x, reduction="none")
    impls = ["reference"] + [i for i in ("cpu",) if _runnable(i)]
    for impl in impls:
        for f in (lambda t: t.int(), lambda t: torch.where(t >= 0, t * 7919 + 10**12, -5)):
            got = sup_con(x["z"], f(x["labels"]), z2=x["z2"], labels2=f(x["labels2"]), reduction="none", impl=impl)
            torch.testing.assert_close(got, base)


def test_auto_picks_the_native_cpu_kernels():
    from mclner.ops import selected_impl

    cpu = torch.device("cpu")
    want = "cpu" if _runnable("cpu") else "reference"
    assert selected_impl("sup_con", cpu, torch.float32) == want
    assert selected_impl("sup_con", cpu, torch.bfloat16) == "reference"  # the CPU kernels take fp32/fp64
