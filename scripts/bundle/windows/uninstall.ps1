<#
.SYNOPSIS
  Gỡ hatang-agent / Remove hatang-agent.

.DESCRIPTION
  Stops and removes the Windows service "hatang-agent" and the program folder. The
  config, credential, spool and logs in "$env:ProgramData\hatang" stay (a reinstall
  continues where it left off) unless -Purge is given (unsent reports are then lost).

.EXAMPLE
  .\uninstall.ps1 -Purge
#>
[CmdletBinding()]
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'hatang'),
    [switch]$Purge
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$DataDir = Join-Path $env:ProgramData 'hatang'
$Agent = Join-Path $InstallDir 'venv\Scripts\hatang-agent.exe'

$identity = [Security.Principal.WindowsIdentity]::GetCurrent()
$principal = New-Object Security.Principal.WindowsPrincipal($identity)
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    Write-Host 'Lỗi / Error: cần quyền quản trị / administrator rights needed: right-click uninstall.cmd -> "Run as administrator".' -ForegroundColor Red
    exit 2
}

if (Test-Path -LiteralPath $Agent) {
    & $Agent service uninstall
    if ($LASTEXITCODE -ne 0) { Write-Host "service uninstall exited with $LASTEXITCODE" }
} elseif (Get-Service -Name 'hatang-agent' -ErrorAction SilentlyContinue) {
    # The program folder is gone but the service is still registered.
    Stop-Service -Name 'hatang-agent' -Force -ErrorAction SilentlyContinue
    & sc.exe delete hatang-agent | Out-Null
}
if (Test-Path -LiteralPath $InstallDir) {
    Remove-Item -LiteralPath $InstallDir -Recurse -Force
}
if ($Purge) {
    if (Test-Path -LiteralPath $DataDir) { Remove-Item -LiteralPath $DataDir -Recurse -Force }
    Write-Host 'Đã gỡ hết / Removed everything, including the spool and the credential.'
} else {
    Write-Host "Đã gỡ chương trình / Program removed. Giữ lại / kept: $DataDir (-Purge removes it)"
}
