"""Analytic ground truth: Gaussian / Gaussian-mixture image priors with exact denoisers.

For x = a·x0 + s·ε (VP in ComfyUI's VE scaling: a = 1, s = σ; flow: a = 1 − σ, s = σ)
and x0 ~ Σ_k π_k N(m_k, Σ_k):
  component posterior mean  D_k(x) = m_k + aΣ_k(a²Σ_k + s²I)⁻¹(x − a m_k)
  responsibilities          r_k ∝ π_k N(x; a m_k, a²Σ_k + s²I)
  denoiser                  D(x) = E[x0|x] = Σ_k r_k D_k(x)
  Jacobian                  J = Σ_k r_k J_k + Σ_k r_k (D_k − D) ∇ℓ_kᵀ,  J_k = aΣ_k(a²Σ_k + s²I)⁻¹
and, for y = H x0 + σ_y n, the exact posterior is a Gaussian mixture with the Kalman
update per component. Everything is float64 via per-component eigendecompositions.
"""

from __future__ import annotations

import math

import torch



def _qt(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per component Q_kᵀ v_bk: q (K,d,d), v (B,K,d) -> (B,K,d), as K batched matmuls."""
    return torch.bmm(v.transpose(0, 1), q).transpose(0, 1)


def _q(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per component Q_k v_bk."""
    return torch.bmm(v.transpose(0, 1), q.transpose(1, 2)).transpose(0, 1)


def _se_kernel(n: int, lengthscale: float) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return torch.exp(-0.5 * ((i[:, None] - i[None, :]) / lengthscale) ** 2)


def structured_covariance(shape, lengthscale: float = 2.0, std: float = 0.5, channel_corr: float = 0.7,
                          nugget: float = 1e-3) -> torch.Tensor:
    """std²·(C_ch ⊗ K_h ⊗ K_w) + nugget·I: smooth, colour-correlated images (C-order flattening)."""
    c, h, w = shape
    idx = torch.arange(c, dtype=torch.float64)
    cch = channel_corr ** (idx[:, None] - idx[None, :]).abs()
    cov = std**2 * torch.kron(cch, torch.kron(_se_kernel(h, lengthscale), _se_kernel(w, lengthscale)))
    return cov + nugget * torch.eye(c * h * w, dtype=torch.float64)


class GaussianMixturePrior:
    """Σ_k π_k N(m_k, Σ_k) over images of `shape` (C, H, W)."""

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor, shape):
        self.shape = tuple(shape)
        d = math.prod(self.shape)
        self.means = means.to(torch.float64).reshape(-1, d)
        self.covs = covs.to(torch.float64).reshape(-1, d, d)
        w = weights.to(torch.float64).reshape(-1)
        self.log_weights = torch.log(w / w.sum())
        self.k, self.d = self.means.shape
        ev, q = torch.linalg.eigh(self.covs)
        self.evals, self.evecs = ev.clamp_min(0.0), q

    # ---- sampling ---------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        comp = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        x = self.means[comp] + torch.einsum("nij,nj->ni", self.evecs[comp], self.evals[comp].sqrt() * z)
        return x.reshape(n, *self.shape)

    @property
    def mean(self) -> torch.Tensor:
        return (self.log_weights.exp()[:, None] * self.means).sum(0).reshape(self.shape)

    @property
    def covariance(self) -> torch.Tensor:
        w = self.log_weights.exp()
        m = self.mean.reshape(-1)
        dm = self.means - m
        return (w[:, None, None] * (self.covs + dm[:, :, None] * dm[:, None, :])).sum(0)

    # ---- denoiser ---------------------------------------------------------------------
    @staticmethod
    def _scales(sigma: torch.Tensor, kind: str):
        s = sigma.to(torch.float64).reshape(-1, 1)
        if kind == "vp":
            return torch.ones_like(s), s
        if kind == "flow":
            return 1.0 - s, s
        raise ValueError(f'kind must be "vp" or "flow", got {kind!r}.')

    def _parts(self, x: torch.Tensor, sigma: torch.Tensor, kind: str):
        """Per-component D_k (B,K,d), ∇ℓ_k (B,K,d), responsibilities (B,K), J_k eigen-gains (B,K,d)."""
        a, s = self._scales(sigma, kind)  # (B,1)
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        lam = self.evals[None]  # (1,K,d)
        a3, s3 = a[:, :, None], s[:, :, None]
        var = a3 * a3 * lam + s3 * s3  # (B,K,d) eigenvalues of a²Σ + s²I
        zc = _qt(self.evecs, xf[:, None, :] - a3 * self.means[None])  # Qᵀ(x − a m)
        gain = a3 * lam / var
        dk = self.means[None] + _q(self.evecs, gain * zc)
        grad = -_q(self.evecs, zc / var)
        logp = self.log_weights[None] - 0.5 * ((zc * zc) / var + torch.log(var)).sum(-1)
        resp = torch.softmax(logp, dim=1)
        return dk, grad, resp, gain

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, kind: str = "vp") -> torch.Tensor:
        """E[x0 | x] for ComfyUI's convention `kind` ("vp": x = x0 + σε, "flow": x = (1−σ)x0 + σε)."""
        dk, _, resp, _ = self._parts(x, sigma, kind)
        out = (resp[:, :, None] * dk).sum(1)
        return out.reshape(x.shape).to(x.dtype)

    def denoiser(self, kind: str = "vp"):
        """A differentiable callable (x, σ) -> x̂0 in ComfyUI's convention."""
        return lambda x, sigma: self.denoise(x, sigma, kind)

    def vjp(self, x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor, kind: str = "vp", parts=None) -> torch.Tensor:
        """Exact J_Dᵀ v (closed form, no autograd)."""
        dk, grad, resp, gain = parts if parts is not None else self._parts(x, sigma, kind)
        vf = v.reshape(v.shape[0], -1).to(torch.float64)
        dmean = (resp[:, :, None] * dk).sum(1)
        qv = _qt(self.evecs, vf[:, None, :].expand(-1, self.k, -1))
        jk_v = _q(self.evecs, gain * qv)  # J_k symmetric
        coupling = torch.einsum("bkd,bd->bk", dk - dmean[:, None], vf)
        out = (resp[:, :, None] * (jk_v + grad * coupling[:, :, None])).sum(1)
        return out.reshape(v.shape).to(v.dtype)

    def jacobian(self, x: torch.Tensor, sigma: torch.Tensor, kind: str = "vp") -> torch.Tensor:
        """Dense J_D (B, d, d) from the closed form."""
        b = x.shape[0]
        eye = torch.eye(self.d, dtype=torch.float64)
        rows = [self.vjp(x[i:i + 1].expand(self.d, *x.shape[1:]), sigma[i:i + 1].expand(self.d),
                         eye.reshape(self.d, *x.shape[1:]), kind).reshape(self.d, self.d) for i in range(b)]
        return torch.stack(rows).transpose(1, 2)  # rows held Jᵀe_i

    def vjp_provider(self, kind: str = "vp"):
        """A VJP provider (see vjp.py) using the exact Jacobian: fast, graph-free benchmarks."""
        prior = self

        class ExactVJP:
            name = "exact"

            def __call__(self, denoiser, x, sigma, cotangent_fn):
                parts = prior._parts(x, sigma, kind)
                dk, _, resp, _ = parts
                x0 = (resp[:, :, None] * dk).sum(1).reshape(x.shape).to(x.dtype)
                if cotangent_fn is None:
                    return x0, None, None
                c = cotangent_fn(x0)
                return x0, c, prior.vjp(x, sigma, c.to(x.dtype), kind, parts=parts).to(c.dtype)

        return ExactVJP()

    # ---- posterior --------------------------------------------------------------------
    def posterior(self, h: torch.Tensor, y: torch.Tensor, sigma_y: float = 0.0, rtol: float = 1e-10):
        """Exact p(x0 | y) for y = H x0 + σ_y n, H dense (m, d), y (B, m).

        Returns (mean (B,d), weights (B,K), component means (B,K,d), component covs (K,d,d)).
        Rank-deficient HΣHᵀ (σ_y = 0) is handled with a spectral pseudo-inverse.
        """
        h = h.to(torch.float64)
        y = y.reshape(y.shape[0], -1).to(torch.float64)
        means, covs, logev = [], [], []
        for k in range(self.k):
            sh = self.covs[k] @ h.T  # Σ Hᵀ (d,m)
            s = h @ sh + sigma_y**2 * torch.eye(h.shape[0], dtype=torch.float64)
            e, q = torch.linalg.eigh(s)
            keep = e > rtol * e.max()
            einv = torch.where(keep, 1.0 / torch.where(keep, e, torch.ones_like(e)), torch.zeros_like(e))
            s_pinv = (q * einv) @ q.T
            gain = sh @ s_pinv  # (d,m)
            r = y - (h @ self.means[k])[None]
            means.append(self.means[k][None] + r @ gain.T)
            covs.append(self.covs[k] - gain @ sh.T)
            zr = r @ q
            logev.append(-0.5 * ((zr * zr) * einv).sum(1) - 0.5 * torch.log(e[keep]).sum())
        logw = self.log_weights[None] + torch.stack(logev, 1)
        wts = torch.softmax(logw, 1)
        cmeans = torch.stack(means, 1)
        return (wts[:, :, None] * cmeans).sum(1), wts, cmeans, torch.stack(covs)


def gaussian_prior(shape=(3, 8, 8), lengthscale: float = 2.0, std: float = 0.5) -> GaussianMixturePrior:
    """A single structured Gaussian with a smooth colour-gradient mean."""
    c, h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=torch.float64),
                            torch.linspace(-1, 1, w, dtype=torch.float64), indexing="ij")
    mean = torch.stack([0.3 * xx * (1 - 2 * (i % 2)) + 0.2 * yy for i in range(c)])
    cov = structured_covariance(shape, lengthscale, std)
    return GaussianMixturePrior(mean[None], cov[None], torch.ones(1), shape)


def mixture_prior(shape=(3, 8, 8), n_components: int = 3, seed: int = 0) -> GaussianMixturePrior:
    """K structured Gaussians with distinct means, lengthscales and colour correlations."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    means, covs = [], []
    for k in range(n_components):
        coarse = torch.randn(1, c, 2, 2, generator=g, dtype=torch.float64) * 0.6
        means.append(torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)[0])
        covs.append(structured_covariance(shape, lengthscale=1.0 + k, std=0.35, channel_corr=0.3 + 0.25 * k))
    weights = torch.rand(n_components, generator=g, dtype=torch.float64) + 0.5
    return GaussianMixturePrior(torch.stack(means), torch.stack(covs), weights, shape)


def dense_matrix(operator, shape) -> torch.Tensor:
    """Dense H (m, d) of a LinearOperator acting on (C, H, W) images, by applying it to basis vectors."""
    d = math.prod(shape)
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    return operator.forward(basis).reshape(d, -1).T.contiguous()
