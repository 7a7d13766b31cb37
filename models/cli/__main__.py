import sys

from .facenet import main

sys.exit(main())
