"""``python -m delight_plugin`` prints the folder to pass as fairseq's ``--user-dir`` from anywhere:

    fairseq-train ... --user-dir "$(python -m delight_plugin)"
"""
import os

print(os.path.dirname(os.path.abspath(__file__)))
