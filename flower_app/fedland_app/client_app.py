"The ClientApp: `fedland.flower.client_app` (serves the client given by the SuperNode's partition-id)."
import fedland.flower

app = fedland.flower.client_app
