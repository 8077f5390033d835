# Runs at boot on a board; on the unix port: micropython -i firmware/main.py
import app

app.main()
