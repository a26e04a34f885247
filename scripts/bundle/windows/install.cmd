@echo off
rem Chuot phai -> "Run as administrator" / Right-click -> "Run as administrator".
powershell.exe -NoProfile -ExecutionPolicy Bypass -File "%~dp0install.ps1" %*
pause
