from wan22ctl.agent.main import main

main()
