"""Segment your own images with your own words: the repository's script for the `scclip` command.

    python demo.py                                     # the bundled sample photo, ViT-B/16
    python demo.py --image cat.jpg --classes "cat,sofa,wall"
    python demo.py --image photos/ --vocab voc21 --save-mask
    python demo.py --web                               # the web page

`python demo.py ARGS` is `scclip segment ARGS`, and `python demo.py --web ARGS` is `scclip web ARGS`
(see `scclip --help` and scclip/cli.py).
"""
import sys

from scclip.cli import demo_main as main

if __name__ == "__main__":
    sys.exit(main())
