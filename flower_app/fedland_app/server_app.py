"The ServerApp: `fedland.flower.server_app` (runs the Experiment of the run config, its rounds on the SuperNodes)."
import fedland.flower

app = fedland.flower.server_app
