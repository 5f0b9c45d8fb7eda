"fedland's Flower App: thin wrappers so that Flower finds the apps of `fedland.flower`."
