from agent.main import main

main()
