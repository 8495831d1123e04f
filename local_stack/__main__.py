"""``python -m local_stack``: the relay on this machine (see ``local_stack.run``).

Kept to an import guard: function workers start by re-importing this module, and must not start a stack.
"""

if __name__ == "__main__":
    import sys

    from local_stack.template import ROOT

    # The layer is /opt/python in Lambda; here the stack reads the cursor table with it too.
    sys.path.insert(0, str(ROOT / "layers" / "relay"))
    from local_stack.run import main

    sys.exit(main())
