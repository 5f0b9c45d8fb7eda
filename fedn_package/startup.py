"FEDn 'startup' entry point: fedland.fedn_client.main('startup', ...)."
import sys

from fedland.fedn_client import main

sys.exit(main(['startup', *sys.argv[1:]]))
