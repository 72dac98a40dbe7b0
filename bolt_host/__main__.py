from __future__ import annotations

from bolt_host.cli import main

if __name__ == "__main__":
    main()
