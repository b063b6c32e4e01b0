from nnletters.cli import main

main()
