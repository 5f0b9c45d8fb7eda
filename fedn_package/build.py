"FEDn 'build' entry point: fedland.fedn_client.main('build', ...)."
import sys

from fedland.fedn_client import main

sys.exit(main(['build', *sys.argv[1:]]))
