"""``python -m ollama_agent_router``; the zipapp's ``__main__.py`` is a copy of this file.

Any Python must be able to parse this file (and the package's ``__init__``): an interpreter older than the
package needs reaches the version check and says so in one line, instead of a SyntaxError from deep inside
a module it imports. So: no f-strings, no annotations, nothing newer than Python 2.7 here.
"""

import sys

REQUIRED = (3, 10)


def main():
    if sys.version_info[:2] < REQUIRED:
        found = "%d.%d" % tuple(sys.version_info[:2])
        sys.stderr.write("ollama-agent-router needs Python %d.%d or newer, but %s is Python %s\n"
                         % (REQUIRED[0], REQUIRED[1], sys.executable or "python", found))
        return 1
    from ollama_agent_router.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
