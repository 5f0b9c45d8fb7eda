"FEDn 'train' entry point: fedland.fedn_client.main('train', ...)."
import sys

from fedland.fedn_client import main

sys.exit(main(['train', *sys.argv[1:]]))
