"""Mesh optimisation by differentiable rasterisation, with remeshing while the mesh moves.

`MeshOptimizer` owns the mutable state (vertices, faces, per-vertex albedo, their Adam moments,
target edge lengths) like Continuous Remeshing's optimiser: `zero_grad`, `step`, `remesh`. The
moments are per-vertex attributes, so `remesh` carries them to new vertices by averaging.
Positions use one second moment per vertex (|g|^2), which keeps each vertex's step isotropic.

`fit` is the loop: render a few random views, `loss.mesh_loss` (colour as albedo x SH irradiance,
mask, Laplacian, normal-consistency and albedo-smoothness terms), Adam, and a remesh every
`remesh_every` steps. The light is solved in closed form after every step (`LightSolver`), and the
albedo stays at the mean colour for the first `albedo_delay` of the steps, so shading lands in the
light and the geometry rather than in the texture. Every remesh also re-spans what no camera sees
over its (moving) rim (`sv3d_trt.mesh.unseen`): with the flat membrane during the first half of
the steps, while the mesh is still close to the carved hull; at `smooth_fill_from` the fit reads
once which patches meet the seen surface gently (a ball's underside) and continues those from then
on, while the others keep the membrane (a box's bottom, flat on the edges the masks place). Left
to the regularisers between refills instead, a box's bottom sagged at its rim by 3 % of its height
over a 256 px fit; refilled with membranes only, a ball lost its cap.

The working resolution rises coarse to fine over the steps (`schedule.plan`) and the fit stops once
the final-resolution loss is flat (`schedule.Convergence`). Each view also gets a colour gain and a
small camera correction (`nuisance.ViewNuisance`), fitted beside the mesh from `refine_start` on, and
the colour term is robust (Huber): generated views are neither equally exposed nor exactly where
their nominal cameras say.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .cameras import Views, project
from .lighting import LightSolver, SphericalHarmonicsLight
from .loss import LossWeights, mesh_loss
from .masks import Frames
from .nuisance import ViewNuisance, detached
from .regularize import adjacent_faces
from .remesh import calc_edges, remesh
from .render import fragments, interpolate, render, vertex_normals
from .schedule import Convergence, plan, step_cost
from .unseen import fill_unseen, gentle_rims, seen_vertices


@dataclass(frozen=True)
class FitConfig:
    iters: int = 200  # planned steps (early stop may end the fit sooner)
    views_per_step: int = 4
    edge_length: float = 0.03  # target edge length, as a fraction of the object's largest side
    coarse_resolution: int | None = 128  # first working resolution (None: the final one throughout)
    coarse_fraction: float = 0.6  # share of the steps over which the resolution reaches its final value
    early_stop: float | None = 0.003  # stop when a window of final-resolution losses falls less than this (relative)
    remesh_every: int = 10
    lr_position: float = 0.002  # fraction of the object's largest side per step (Adam step size)
    lr_albedo: float = 0.03
    albedo_delay: float = 0.3  # fraction of the steps with the albedo held, so the light takes the shading first
    weights: LossWeights = field(default_factory=LossWeights)
    huber: float | None = 0.1  # robust colour term (`loss.mesh_loss`); None: plain squared error
    crease_degrees: float | None = 30.0  # crease-keeping normal term (`loss.mesh_loss`); None: plain 1 - cos
    refine_views: bool = True  # fit per-view gains and camera corrections (`nuisance`) with the mesh
    refine_start: float = 0.2  # fraction of the steps before they move (the hull first takes its rough shape)
    lr_gain: float = 0.005
    lr_pose: float = 0.001  # radians (and relative distance) per step
    weight_prior: float = 1e-4  # pull of the nuisance parameters toward nominal (`ViewNuisance.penalty`)
    smooth_fill_from: float = 0.5  # share of the steps after which unseen patches with gentle rims are continued
    seed: int = 0


class MeshOptimizer:
    """Per-vertex Adam on positions and albedo, with remeshing that carries the optimiser state."""

    betas = (0.9, 0.99)
    eps = 1e-12

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, albedo: torch.Tensor, edge_length: float,
                 lr_position: float, lr_albedo: float):
        self.vertices = vertices.detach().clone().requires_grad_()  # (V, 3)
        self.albedo = albedo.detach().clone().requires_grad_()  # (V, 3)
        self.faces = faces  # (F, 3) long
        self.edges = calc_edges(faces)[0]  # (E, 2), recomputed when the topology changes
        self.face_pairs = adjacent_faces(faces)  # (E, 2)
        self.target = torch.full((len(vertices),), edge_length, device=vertices.device)  # (V,)
        self.lr_position, self.lr_albedo = lr_position, lr_albedo
        zeros = torch.zeros_like(self.vertices)
        # m: first moments (3 + 3), v: second moments (1 for position, 3 for albedo).
        self.moments = {"m": torch.cat([zeros, zeros], 1), "v": torch.zeros(len(vertices), 4, device=vertices.device)}
        self.continued: torch.Tensor | None = None  # (V,) which unseen patches continue the surface (`fill_unseen`)
        self.steps = 0

    def zero_grad(self) -> None:
        self.vertices.grad = None
        self.albedo.grad = None

    @torch.no_grad()
    def step(self, lr_scale: float = 1.0, albedo: bool = True) -> None:
        self.steps += 1
        b1, b2 = self.betas
        g_pos = self.vertices.grad if self.vertices.grad is not None else torch.zeros_like(self.vertices)
        g_alb = self.albedo.grad if self.albedo.grad is not None else torch.zeros_like(self.albedo)
        grad_m = torch.cat([g_pos, g_alb], 1)  # (V, 6)
        grad_v = torch.cat([g_pos.pow(2).sum(1, keepdim=True), g_alb.pow(2)], 1)  # (V, 4)
        self.moments["m"].lerp_(grad_m, 1 - b1)
        self.moments["v"].lerp_(grad_v, 1 - b2)
        m_hat = self.moments["m"] / (1 - b1 ** self.steps)
        v_hat = self.moments["v"] / (1 - b2 ** self.steps)
        self.vertices -= lr_scale * self.lr_position * m_hat[:, :3] / (v_hat[:, :1].sqrt() + self.eps)
        if albedo:
            self.albedo -= lr_scale * self.lr_albedo * m_hat[:, 3:] / (v_hat[:, 1:].sqrt() + self.eps)
        self.albedo.clamp_(0.0, 1.0)

    @torch.no_grad()
    def remesh(self, passes: int = 2) -> None:
        attributes = {"albedo": self.albedo.detach(), **self.moments}
        if self.continued is not None:
            attributes["continued"] = self.continued
        vertices, faces, attributes, target = remesh(self.vertices.detach(), self.faces, attributes, self.target,
                                                     passes)
        self.vertices = vertices.requires_grad_()
        self.albedo = attributes.pop("albedo").requires_grad_()
        self.continued = attributes.pop("continued", None)
        self.moments = attributes
        self.faces, self.target = faces, target
        self.edges = calc_edges(faces)[0]
        self.face_pairs = adjacent_faces(faces)

    @torch.no_grad()
    def fill_unseen(self, views: Views, decide: bool) -> None:
        """Re-span the unseen vertices over the seen ones (`unseen.fill_unseen`); their optimiser state restarts.
        decide: from now on continue the patches with gentle rims (`unseen.gentle_rims`, asked only this once)."""
        seen = seen_vertices(self.vertices.detach(), self.faces, views)
        if decide and self.continued is None:
            self.continued = gentle_rims(self.vertices.detach(), self.faces, seen)
        self.vertices = fill_unseen(self.vertices.detach(), self.faces, seen, self.continued).requires_grad_()
        for moment in self.moments.values():
            moment[~seen] = 0.0


def _initial_albedo(frames: Frames, vertices: torch.Tensor) -> torch.Tensor:
    """Mean foreground colour everywhere: a neutral start that lets lighting and albedo separate."""
    mean = (frames.rgb * frames.mask[..., None]).sum((0, 1, 2)) / frames.mask.sum().clamp_min(1.0)
    return mean.expand(len(vertices), 3).clone()


@torch.no_grad()
def _update_light(solver: LightSolver, light: SphericalHarmonicsLight, opt: MeshOptimizer, out, views: Views,
                  frames: Frames, index: torch.Tensor, gains: torch.Tensor) -> None:
    """Re-solve the light from this step's fully covered pixels (mask > 0.99: no edge blending), with each
    view's colour gain (n, 3) divided out."""
    vertices = opt.vertices.detach()
    frags = fragments(project(vertices, views), opt.faces, out.raster)
    inside = frames.mask[index].reshape(-1)[frags.pixel] > 0.99
    normals = F.normalize(interpolate(vertex_normals(vertices, opt.faces), opt.faces, frags), dim=-1, eps=1e-12)
    albedo = interpolate(opt.albedo.detach(), opt.faces, frags)
    pixels = frames.rgb[index].shape[1] * frames.rgb[index].shape[2]
    target = frames.rgb[index].reshape(-1, 3)[frags.pixel] / gains[frags.pixel // pixels]
    solver.update(light, albedo[inside], normals[inside], target[inside])


@dataclass(frozen=True, eq=False)
class FitResult:
    vertices: torch.Tensor  # (V, 3)
    faces: torch.Tensor  # (F, 3)
    albedo: torch.Tensor  # (V, 3)
    light: SphericalHarmonicsLight
    losses: list[float]
    nuisance: ViewNuisance | None  # the fitted per-view gains and camera corrections


def fit(vertices: torch.Tensor, faces: torch.Tensor, level: Callable[[int], tuple[Frames, Views]], resolution: int,
        config: FitConfig, scale: float, progress: Callable[[float], None] | None = None) -> FitResult:
    """Optimise a closed mesh against the frames. level(r) gives the frames and views at working resolution r
    (the plan in `schedule` visits a few, ending at `resolution`); scale = the object's largest side.
    progress(fraction) reports the share of the planned work done (by `schedule.step_cost`; 1.0 at the end)."""
    plan_resolutions = plan(config, resolution)
    costs = [step_cost(r) for r in plan_resolutions]
    total_cost, done_cost = sum(costs), 0.0
    frames, views = level(plan_resolutions[0])
    opt = MeshOptimizer(vertices, faces, _initial_albedo(frames, vertices), config.edge_length * scale,
                        config.lr_position * scale, config.lr_albedo)
    light = SphericalHarmonicsLight().to(vertices.device).requires_grad_(False)
    light_solver = LightSolver()
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.empty(0, dtype=torch.long)
    losses = []
    convergence = Convergence(2 * config.remesh_every, config.early_stop or 0.0)
    nuisance = ViewNuisance(len(views), vertices.device, config.lr_gain, config.lr_pose) if config.refine_views else None
    # Marching-cubes meshes are much finer than the target: coarsen until the face count settles.
    for _ in range(10):
        count = len(opt.faces)
        opt.remesh(passes=3)
        if len(opt.faces) > 0.97 * count:
            break
    for it, res in enumerate(plan_resolutions):
        if res != views.resolution:
            frames, views = level(res)
        if len(order) < config.views_per_step:
            order = torch.cat([order, torch.randperm(len(views), generator=generator)])
        index, order = order[:config.views_per_step], order[config.views_per_step:]
        index = index.to(vertices.device)
        subset = views.subset(index) if nuisance is None else nuisance.views(views, index)
        # Cosine decay to 10 %: large moves early, fine convergence at the end.
        lr_scale = 0.1 + 0.45 * (1.0 + math.cos(math.pi * it / config.iters))
        opt.zero_grad()
        out = render(opt.vertices, opt.faces, subset, colors=opt.albedo, shading=light)
        image = out.image if nuisance is None else nuisance.shade(out.image, out.alpha, index)
        loss, _ = mesh_loss(image, out.alpha, frames.rgb[index], frames.mask[index], opt.vertices, opt.faces,
                            opt.edges, opt.face_pairs, opt.albedo, float(opt.target.mean()), config.weights,
                            config.huber, config.crease_degrees)
        if nuisance is not None:
            nuisance.zero_grad()
            loss = loss + config.weight_prior * nuisance.penalty()
        loss.backward()
        opt.step(lr_scale, albedo=it >= config.albedo_delay * config.iters)
        if nuisance is not None and it >= config.refine_start * config.iters:
            nuisance.step()
        gains = torch.ones(len(index), 3, device=vertices.device) if nuisance is None else nuisance.gains(index).detach()
        _update_light(light_solver, light, opt, out, detached(subset), frames, index, gains)
        losses.append(float(loss.detach()))  # sync
        done_cost += costs[it]
        if res == resolution:
            convergence.add(losses[-1])
        else:
            convergence.reset()
        if (it + 1) % config.remesh_every == 0 and it + 1 < config.iters:
            if config.early_stop is not None and convergence.converged():
                break
            opt.remesh()
            opt.fill_unseen(views if nuisance is None else nuisance.detached_views(views),
                            decide=it + 1 >= config.smooth_fill_from * config.iters)
        if progress is not None:
            progress(done_cost / total_cost)
    if progress is not None:
        progress(1.0)
    return FitResult(opt.vertices.detach(), opt.faces, opt.albedo.detach(), light, losses, nuisance)
