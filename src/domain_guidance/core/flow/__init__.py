"""Flow matching as in SiT: the linear transport path (t = 0 noise, t = 1 data), conversions between
velocity, noise and score, the training loss. The samplers (``flow.samplers``) register themselves
in ``core.sampling.SAMPLERS`` when ``core.sampling`` is imported."""
from .loss import flow_matching_losses, flow_training_inputs
from .path import (DIFFUSION_FORMS, diffusion_coefficient, eps_to_velocity, interpolate, score_to_velocity,
                   sde_drift, velocity_target, velocity_to_data, velocity_to_eps, velocity_to_score)

__all__ = ["DIFFUSION_FORMS", "diffusion_coefficient", "eps_to_velocity", "flow_matching_losses",
           "flow_training_inputs", "interpolate", "score_to_velocity", "sde_drift", "velocity_target",
           "velocity_to_data", "velocity_to_eps", "velocity_to_score"]
