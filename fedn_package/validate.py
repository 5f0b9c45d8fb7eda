"FEDn 'validate' entry point: fedland.fedn_client.main('validate', ...)."
import sys

from fedland.fedn_client import main

sys.exit(main(['validate', *sys.argv[1:]]))
