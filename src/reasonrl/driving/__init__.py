"""DriveMoE stand-in on highway-env (docs/drivemoe.md): environment layer, routed policy, training, benchmark."""
